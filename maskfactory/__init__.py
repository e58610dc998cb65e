"""maskfactory: batch labelling for segmentation datasets."""
